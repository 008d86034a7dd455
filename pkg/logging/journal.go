package logging

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// sendFunc delivers one journal entry; journal.Send in production.
type sendFunc func(msg string, pri journal.Priority, vars map[string]string) error

// journalHandler is a slog.Handler writing native journal entries. MESSAGE
// carries the message followed by the attributes as key=value, so the
// default `journalctl` output reads like the text log; each attribute is
// also its own field for filtering and `-o json`.
//
// Why not github.com/systemd/slog-journal (v0.1.2, pure Go like this one,
// structured fields and levels too): it sends MESSAGE alone (plain
// `journalctl` would lose every attribute), writes keys as they are (our
// lower-case ones are not journal field names and journald drops them)
// unless a ReplaceAttr rewrites them, and then an attribute named
// "message" is a second MESSAGE; it maps levels between the named ones to
// INFO, and has no fallback when journald refuses an entry.
// Matching that would wrap it in as much code as this handler is.
type journalHandler struct {
	send     sendFunc
	level    slog.Leveler
	ident    string
	fallback slog.Handler // when journald refuses an entry
	prefix   string       // field name prefix from WithGroup, "" or "GROUP_"
	textPfx  string       // key prefix in MESSAGE, "" or "group."
	fields   []field      // from WithAttrs, already named
}

type field struct{ name, text, value string }

func newJournalHandler(send sendFunc, level slog.Leveler, fallback io.Writer) *journalHandler {
	return &journalHandler{
		send:     send,
		level:    level,
		ident:    identifier(),
		fallback: slog.NewTextHandler(fallback, &slog.HandlerOptions{Level: level}),
	}
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.fallback = h.fallback.WithAttrs(as)
	h2.fields = append(h.fields[:len(h.fields):len(h.fields)], flatten(nil, h.prefix, h.textPfx, as)...)
	return &h2
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.fallback = h.fallback.WithGroup(name)
	h2.prefix = h.prefix + fieldName(name) + "_"
	h2.textPfx = h.textPfx + name + "."
	return &h2
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	fs := h.fields
	if r.NumAttrs() > 0 {
		as := make([]slog.Attr, 0, r.NumAttrs())
		r.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
		fs = flatten(fs[:len(fs):len(fs)], h.prefix, h.textPfx, as)
	}
	vars := make(map[string]string, len(fs)+4)
	var msg strings.Builder
	msg.WriteString(r.Message)
	for _, f := range fs {
		vars[f.name] = f.value
		msg.WriteByte(' ')
		msg.WriteString(f.text)
		msg.WriteByte('=')
		msg.WriteString(quote(f.value))
	}
	vars["SYSLOG_IDENTIFIER"] = h.ident
	if r.PC != 0 {
		fr, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		vars["CODE_FILE"] = fr.File
		vars["CODE_LINE"] = strconv.Itoa(fr.Line)
		vars["CODE_FUNC"] = fr.Function
	}
	if err := h.send(msg.String(), priority(r.Level), vars); err != nil {
		// journald gone or full: stderr is still the journal stream, so a
		// text line is the best remaining record of the entry.
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

// priority maps slog levels to syslog priorities; levels between the named
// ones round down to the less severe priority.
func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError+4:
		return journal.PriCrit
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// reserved are fields the handler sets itself; attributes with these names
// get an ATTR_ prefix rather than overwriting them.
var reserved = map[string]bool{
	"MESSAGE": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true,
	"CODE_FILE": true, "CODE_LINE": true, "CODE_FUNC": true, "MESSAGE_ID": true,
}

// flatten appends attrs as fields, descending into groups (GROUP_KEY).
func flatten(dst []field, prefix, textPfx string, as []slog.Attr) []field {
	for _, a := range as {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			g := v.Group()
			if a.Key == "" {
				dst = flatten(dst, prefix, textPfx, g)
			} else {
				dst = flatten(dst, prefix+fieldName(a.Key)+"_", textPfx+a.Key+".", g)
			}
			continue
		}
		if a.Key == "" && v.Any() == nil {
			continue // slog's rule: empty attributes are ignored
		}
		name := prefix + fieldName(a.Key)
		if reserved[name] {
			name = "ATTR_" + name
		}
		dst = append(dst, field{name: truncate(name), text: textPfx + a.Key, value: valueText(v)})
	}
	return dst
}

// fieldName turns an attribute key into a valid journal field name:
// upper case, [A-Z0-9_] only, not starting with '_' (reserved for trusted
// fields) or a digit.
func fieldName(key string) string {
	b := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			c = '_'
		}
		b = append(b, c)
	}
	s := strings.TrimLeft(string(b), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F" + s
	}
	return s
}

// truncate keeps names within journald's 64-byte field name limit.
func truncate(name string) string {
	if len(name) > 64 {
		return name[:64]
	}
	return name
}

func valueText(v slog.Value) string {
	switch v.Kind() {
	case slog.KindString:
		return v.String()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return err.Error()
		}
	}
	return v.String()
}

// quote quotes a value in MESSAGE when it would not read as one word.
func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=\\") || !strconv.CanBackquote(s) {
		return strconv.Quote(s)
	}
	return s
}
