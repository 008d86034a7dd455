package dbus

import (
	"encoding/xml"
	"os"
	"testing"
)

// TestPolkitPolicy: the installed polkit file is well-formed and declares
// the action the daemon checks, admin-authenticated for desktop users.
func TestPolkitPolicy(t *testing.T) {
	b, err := os.ReadFile("org.diskd.Diskd1.policy")
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		Actions []struct {
			ID       string `xml:"id,attr"`
			Defaults struct {
				Any      string `xml:"allow_any"`
				Inactive string `xml:"allow_inactive"`
				Active   string `xml:"allow_active"`
			} `xml:"defaults"`
		} `xml:"action"`
	}
	if err := xml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	if len(pc.Actions) != 1 || pc.Actions[0].ID != PolkitMountAction {
		t.Fatalf("actions %+v, want one: %s", pc.Actions, PolkitMountAction)
	}
	d := pc.Actions[0].Defaults
	if d.Active != "auth_admin_keep" || d.Any != "auth_admin" || d.Inactive != "auth_admin" {
		t.Errorf("defaults %+v", d)
	}
}
