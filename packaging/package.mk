# packaging/package.mk: `make install` and `make package`, included by the
# top-level Makefile (which provides `build`, GO and BIN).
#
#   make install [DESTDIR=/tmp/root] [PREFIX=/usr/local]
#   make package        dist/diskd_VERSION-1_ARCH.deb and dist/diskd-VERSION-1.ARCH.rpm
#   make uninstall [DESTDIR=...] [PREFIX=...]
#
# `package` stages `make install DESTDIR=dist/stage PREFIX=/usr` and packs
# that tree, so the packages and a plain install hold the same files.

PREFIX  ?= /usr/local
DESTDIR ?=
GO      ?= go
BIN     ?= bin

sysconfdir     ?= /etc
bindir         ?= $(PREFIX)/bin
datadir        ?= $(PREFIX)/share
mandir         ?= $(datadir)/man
docdir         ?= $(datadir)/doc/diskd
unitdir        ?= $(PREFIX)/lib/systemd/system
# dbus-daemon reads bus policies only from /usr/share/dbus-1/system.d and
# /etc/dbus-1/system.d, so any other prefix puts the policy under /etc.
dbuspolicydir  ?= $(if $(filter /usr,$(PREFIX)),$(datadir)/dbus-1/system.d,$(sysconfdir)/dbus-1/system.d)
# systemd-sysusers reads /usr/lib/sysusers.d and /etc/sysusers.d only, as
# dbus-daemon does its policies.
sysusersdir    ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/sysusers.d,$(sysconfdir)/sysusers.d)
dbusservicedir ?= $(datadir)/dbus-1/system-services
dbusifacedir   ?= $(datadir)/dbus-1/interfaces
polkitdir      ?= $(datadir)/polkit-1/actions
bashcompdir    ?= $(datadir)/bash-completion/completions
zshcompdir     ?= $(datadir)/zsh/vendor-completions
fishcompdir    ?= $(datadir)/fish/vendor_completions.d

# nfpm is run pinned through `go run` rather than as a go.mod tool
# dependency: a tool directive would put nfpm's ~100 modules into diskd's
# module graph, where minimal version selection could raise the versions of
# the daemon's own dependencies (x/sys, x/net, ...). `go run pkg@version`
# is checked against go.sum's database just the same and cached after the
# first build (about 40 s cold, under a second warm).
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_DIST    ?= dist
PKG_STAGE   ?= $(PKG_DIST)/stage
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
# Package versions must start with a digit: a tag v1.2.3 gives 1.2.3, an
# untagged tree 0.0.0~gitSHA (sorting before any release).
PKG_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$${v\#v}" | tr - + \
                 || echo "0.0.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")

PKG_MAINTAINER ?= diskd maintainers <maintainers@diskd.example>
# File times in the packages and the changelog date: the last commit's, so
# the same commit gives the same packages.
PKG_EPOCH   ?= $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),0)

# Paths below are relative to the repository root, where make runs.
DISKD_SRC := .

.PHONY: install uninstall package

install: build
	install -d $(DESTDIR)$(bindir) $(DESTDIR)$(unitdir) $(DESTDIR)$(sysusersdir) $(DESTDIR)$(dbuspolicydir) \
	  $(DESTDIR)$(dbusservicedir) $(DESTDIR)$(dbusifacedir) $(DESTDIR)$(mandir)/man1 \
	  $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(bashcompdir) $(DESTDIR)$(zshcompdir) \
	  $(DESTDIR)$(fishcompdir) $(DESTDIR)$(docdir) $(DESTDIR)$(sysconfdir)/diskd $(DESTDIR)$(polkitdir)
	install -m 0755 $(BIN)/diskd $(BIN)/diskctl $(DESTDIR)$(bindir)/
	# The units and the bus activation file name the daemon by path.
	for f in systemd/diskd.service systemd/diskd.socket; do \
	  sed 's|/usr/bin/diskd|$(bindir)/diskd|g' $(DISKD_SRC)/$$f > $(DESTDIR)$(unitdir)/$${f#systemd/} || exit 1; \
	  chmod 0644 $(DESTDIR)$(unitdir)/$${f#systemd/}; done
	install -m 0644 $(DISKD_SRC)/systemd/diskd.sysusers $(DESTDIR)$(sysusersdir)/diskd.conf
	sed 's|/usr/bin/diskd|$(bindir)/diskd|g' $(DISKD_SRC)/dbus/org.diskd.Diskd1.service \
	  > $(DESTDIR)$(dbusservicedir)/org.diskd.Diskd1.service
	chmod 0644 $(DESTDIR)$(dbusservicedir)/org.diskd.Diskd1.service
	install -m 0644 $(DISKD_SRC)/dbus/org.diskd.Diskd1.conf $(DESTDIR)$(dbuspolicydir)/
	install -m 0644 $(DISKD_SRC)/dbus/*.xml $(DESTDIR)$(dbusifacedir)/
	install -m 0644 $(DISKD_SRC)/dbus/org.diskd.Diskd1.policy $(DESTDIR)$(polkitdir)/
	gzip -9n < $(DISKD_SRC)/docs/man/diskctl.1 > $(DESTDIR)$(mandir)/man1/diskctl.1.gz
	gzip -9n < $(DISKD_SRC)/docs/man/diskd.8 > $(DESTDIR)$(mandir)/man8/diskd.8.gz
	chmod 0644 $(DESTDIR)$(mandir)/man1/diskctl.1.gz $(DESTDIR)$(mandir)/man8/diskd.8.gz
	$(BIN)/diskctl completion bash > $(DESTDIR)$(bashcompdir)/diskctl
	$(BIN)/diskctl completion zsh > $(DESTDIR)$(zshcompdir)/_diskctl
	$(BIN)/diskctl completion fish > $(DESTDIR)$(fishcompdir)/diskctl.fish
	chmod 0644 $(DESTDIR)$(bashcompdir)/diskctl $(DESTDIR)$(zshcompdir)/_diskctl $(DESTDIR)$(fishcompdir)/diskctl.fish
	install -m 0644 $(DISKD_SRC)/packaging/copyright $(DESTDIR)$(docdir)/copyright
	# An existing configuration is the administrator's: never overwrite it.
	if [ -e $(DESTDIR)$(sysconfdir)/diskd/diskd.conf ]; then \
	  echo "keeping $(DESTDIR)$(sysconfdir)/diskd/diskd.conf"; \
	else install -m 0644 $(DISKD_SRC)/packaging/diskd.conf $(DESTDIR)$(sysconfdir)/diskd/diskd.conf; fi

uninstall:
	rm -f $(DESTDIR)$(bindir)/diskd $(DESTDIR)$(bindir)/diskctl \
	  $(DESTDIR)$(unitdir)/diskd.service $(DESTDIR)$(unitdir)/diskd.socket \
	  $(DESTDIR)$(sysusersdir)/diskd.conf \
	  $(DESTDIR)$(dbuspolicydir)/org.diskd.Diskd1.conf \
	  $(DESTDIR)$(dbusservicedir)/org.diskd.Diskd1.service \
	  $(DESTDIR)$(polkitdir)/org.diskd.Diskd1.policy \
	  $(patsubst $(DISKD_SRC)/dbus/%,$(DESTDIR)$(dbusifacedir)/%,$(wildcard $(DISKD_SRC)/dbus/*.xml)) \
	  $(DESTDIR)$(mandir)/man1/diskctl.1.gz $(DESTDIR)$(mandir)/man8/diskd.8.gz \
	  $(DESTDIR)$(bashcompdir)/diskctl $(DESTDIR)$(zshcompdir)/_diskctl \
	  $(DESTDIR)$(fishcompdir)/diskctl.fish $(DESTDIR)$(docdir)/copyright
	-rmdir $(DESTDIR)$(docdir)
	@echo "left $(DESTDIR)$(sysconfdir)/diskd/diskd.conf, /var/lib/diskd and the group diskd in place"

package: build
	rm -rf $(PKG_STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(PKG_STAGE)) PREFIX=/usr
	mkdir -p $(PKG_DIST)
	# Debian wants a changelog in every non-native package.
	printf 'diskd (%s-1) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
	  '$(PKG_VERSION)' "$$(git describe --always --dirty 2>/dev/null || echo 'a source tree')" \
	  '$(PKG_MAINTAINER)' "$$(LC_ALL=C date -u -R -d @$(PKG_EPOCH))" \
	  | gzip -9n > $(PKG_STAGE)/changelog.Debian.gz
	for p in deb rpm; do \
	  SOURCE_DATE_EPOCH=$(PKG_EPOCH) DISKD_STAGE=$(abspath $(PKG_STAGE)) DISKD_VERSION='$(PKG_VERSION)' \
	  DISKD_ARCH=$(PKG_ARCH) DISKD_MAINTAINER='$(PKG_MAINTAINER)' \
	    $(NFPM) package --config packaging/nfpm.yaml --packager $$p --target $(PKG_DIST)/ || exit 1; \
	done
