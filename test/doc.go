// Package test holds end-to-end tests that span processes: real diskd and
// diskctl binaries, real blkid on loop devices, real kernel uevents,
// systemd's socket activation and sd_notify, network namespaces joined by
// a bridge, a private dbus-daemon. They need root and skip clearly without
// it; CI runs as root.
package test
