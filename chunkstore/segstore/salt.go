package segstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The salt file, dir/salt, holds the key of record tags (FORMAT.md, "Salt file"):
// magic(4) "CFSK", version(2) = 1, reserved(2) = 0, salt(32), CRC-32C(4) of the 40
// bytes before it. It sits beside the index, not in it: the index is derived data
// that may be rebuilt, and the segments cannot be read without the salt.
const (
	saltFileName    = "salt"
	saltMagic       = "CFSK"
	saltFileVersion = 1
	saltFileSize    = 8 + saltSize + 4
)

// loadSalt reads dir/salt. If the file does not exist and the store holds no segments,
// it creates one with a fresh random salt, durably (unless NoSync) before any record
// can be written with it. A store with segments but no salt file is refused: its
// records could not be told from forgeries.
func (s *Store) loadSalt(haveSegments bool) ([]byte, error) {
	path := filepath.Join(s.dir, saltFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return parseSaltFile(b, path)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("segstore: open %s: read salt: %w", s.dir, err)
	case haveSegments:
		return nil, fmt.Errorf("segstore: open %s: segment files present but %s is missing: records cannot be verified without the store's salt; restore the file, or move the segments aside and let repair refill the node", s.dir, path)
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("segstore: open %s: generate salt: %w", s.dir, err)
	}
	if err := s.writeSaltFile(path, salt); err != nil {
		return nil, fmt.Errorf("segstore: open %s: create salt file: %w", s.dir, err)
	}
	return salt, nil
}

func encodeSaltFile(salt []byte) []byte {
	b := make([]byte, 0, saltFileSize)
	b = append(b, saltMagic...)
	b = binary.BigEndian.AppendUint16(b, saltFileVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = append(b, salt...)
	return binary.BigEndian.AppendUint32(b, crcOf(b))
}

func parseSaltFile(b []byte, path string) ([]byte, error) {
	switch {
	case len(b) != saltFileSize:
		return nil, fmt.Errorf("segstore: salt file %s is %d bytes, want %d: %w", path, len(b), saltFileSize, errBadSaltFile)
	case string(b[0:4]) != saltMagic:
		return nil, fmt.Errorf("segstore: salt file %s: bad magic %q: %w", path, b[0:4], errBadSaltFile)
	case binary.BigEndian.Uint16(b[4:6]) != saltFileVersion:
		return nil, fmt.Errorf("segstore: salt file %s: unknown version %d: %w", path, binary.BigEndian.Uint16(b[4:6]), errBadSaltFile)
	case crcOf(b[:saltFileSize-4]) != binary.BigEndian.Uint32(b[saltFileSize-4:]):
		return nil, fmt.Errorf("segstore: salt file %s: CRC mismatch: %w", path, errBadSaltFile)
	}
	return b[8 : 8+saltSize : 8+saltSize], nil
}

// errBadSaltFile marks a salt file that does not decode.
var errBadSaltFile = errors.New("segstore: damaged salt file")

// writeSaltFile writes the salt file through a temporary file and a rename, fsyncing
// the file and the directory (unless NoSync).
func (s *Store) writeSaltFile(path string, salt []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(encodeSaltFile(salt))
	if err == nil && !s.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && !s.opts.NoSync {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
