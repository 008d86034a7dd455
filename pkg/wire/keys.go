package wire

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// MinSecret is the shortest secret a key file may hold, in bytes.
const MinSecret = 16

// Keyring holds the shared secrets of an authenticated network: the first
// key tags what we send, every key (at most two) verifies what we receive.
// A nil *Keyring means an unauthenticated network.
type Keyring struct {
	keys []key
}

type key struct {
	id     uint8
	secret []byte
}

// ParseKeys reads a key file: one key per line as "ID SECRET", ID 1-255,
// SECRET at least MinSecret bytes of non-blank text used as is (generate it
// with `openssl rand -hex 32`); blank lines and lines starting with '#' are
// ignored. One or two keys; the first one tags outgoing datagrams. To
// rotate: add the new key as the second line everywhere, then swap the
// lines everywhere, then remove the old one.
func ParseKeys(r io.Reader) (*Keyring, error) {
	kr := &Keyring{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"ID SECRET\"", line)
		}
		id, err := strconv.ParseUint(f[0], 10, 8)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("line %d: key ID %q: want 1-255", line, f[0])
		}
		if len(f[1]) < MinSecret {
			return nil, fmt.Errorf("line %d: secret shorter than %d bytes", line, MinSecret)
		}
		for _, k := range kr.keys {
			if k.id == uint8(id) {
				return nil, fmt.Errorf("line %d: key ID %d given twice", line, id)
			}
		}
		if len(kr.keys) == 2 {
			return nil, fmt.Errorf("line %d: more than two keys", line)
		}
		kr.keys = append(kr.keys, key{id: uint8(id), secret: []byte(f[1])})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(kr.keys) == 0 {
		return nil, errors.New("no key")
	}
	return kr, nil
}

// NewKeyFile returns the text of a new key file: a comment and one key
// with the given ID and a secret of 32 random bytes in hex, which ParseKeys
// reads back (`diskd keygen` writes it).
func NewKeyFile(id uint8, now time.Time) ([]byte, error) {
	if id == 0 {
		return nil, errors.New("key ID 0: want 1-255")
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("random secret: %w", err)
	}
	return fmt.Appendf(nil, "# diskd network key, made %s by diskd keygen. Keep it secret, mode 0600;\n"+
		"# the same file goes on every peer (key_file). Format: \"ID SECRET\" lines.\n%d %s\n",
		now.UTC().Format(time.RFC3339), id, hex.EncodeToString(secret)), nil
}

// LoadKeyFile reads a key file (see ParseKeys). It refuses a file that
// other users may read or write: the secret is the network's only
// protection.
func LoadKeyFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s: mode %04o lets other users read or write it; chmod 600 it", path, st.Mode().Perm())
	}
	kr, err := ParseKeys(f)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return kr, nil
}

// IDs returns the key IDs, the sending key first.
func (k *Keyring) IDs() []uint8 {
	if k == nil {
		return nil
	}
	ids := make([]uint8, len(k.keys))
	for i, kk := range k.keys {
		ids[i] = kk.id
	}
	return ids
}

func (k *Keyring) find(id uint8) []byte {
	for _, kk := range k.keys {
		if kk.id == id {
			return kk.secret
		}
	}
	return nil
}

func tag(secret, msg []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(msg)
	return m.Sum(nil)[:TagSize]
}
