package kmstest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Transit is a fake HashiCorp Vault Transit engine (an http.Handler for httptest): the
// endpoints client/kms uses (encrypt, decrypt, read key, rotate) and the ones an operator
// uses (create key, key config: min_decryption_version), with Vault's JSON shapes,
// status codes and error texts. Requests must carry Token in X-Vault-Token.
type Transit struct {
	Token string
	Mount string // default "transit"

	mu    sync.Mutex
	keys  map[string]*transitKey
	calls map[string]int
}

type transitKey struct {
	versions   [][]byte
	minDecrypt int
}

// NewTransit returns a fake Transit engine holding the keys named (version 1 each).
func NewTransit(token string, keys ...string) (*Transit, error) {
	t := &Transit{Token: token, Mount: "transit", keys: map[string]*transitKey{}, calls: map[string]int{}}
	for _, k := range keys {
		if err := t.create(k); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Transit) create(name string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	t.keys[name] = &transitKey{versions: [][]byte{b}, minDecrypt: 1}
	return nil
}

// Calls returns how often an endpoint ("encrypt", "decrypt", "rotate", "read") ran.
func (t *Transit) Calls(op string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls[op]
}

func reply(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if body != nil {
		json.NewEncoder(w).Encode(body)
	}
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	reply(w, code, map[string]any{"errors": []string{fmt.Sprintf(format, args...)}})
}

// ServeHTTP implements the engine.
func (t *Transit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Vault-Token") != t.Token {
		fail(w, http.StatusForbidden, "permission denied")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/"+t.Mount+"/")
	if !ok {
		fail(w, http.StatusNotFound, "no handler for route %q", r.URL.Path)
		return
	}
	var body map[string]any
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil && err.Error() != "EOF" {
			fail(w, http.StatusBadRequest, "failed to parse JSON input: %v", err)
			return
		}
	}
	parts := strings.Split(rest, "/")
	t.mu.Lock()
	defer t.mu.Unlock()
	write := r.Method == http.MethodPut || r.Method == http.MethodPost
	switch {
	case len(parts) == 2 && parts[0] == "encrypt" && write:
		t.calls["encrypt"]++
		k, ok := t.keys[parts[1]]
		if !ok {
			fail(w, http.StatusBadRequest, "encryption key not found")
			return
		}
		pt, err := base64.StdEncoding.DecodeString(fmt.Sprint(body["plaintext"]))
		if err != nil {
			fail(w, http.StatusBadRequest, "failed to base64-decode plaintext")
			return
		}
		v := len(k.versions)
		a, err := gcm(k.versions[v-1])
		if err != nil {
			fail(w, http.StatusInternalServerError, "%v", err)
			return
		}
		nonce := make([]byte, a.NonceSize())
		rand.Read(nonce)
		ct := a.Seal(nonce, nonce, pt, nil)
		reply(w, http.StatusOK, map[string]any{"data": map[string]any{
			"ciphertext":  fmt.Sprintf("vault:v%d:%s", v, base64.StdEncoding.EncodeToString(ct)),
			"key_version": v,
		}})
	case len(parts) == 2 && parts[0] == "decrypt" && write:
		t.calls["decrypt"]++
		k, ok := t.keys[parts[1]]
		if !ok {
			fail(w, http.StatusBadRequest, "encryption key not found")
			return
		}
		s := fmt.Sprint(body["ciphertext"])
		rest, ok := strings.CutPrefix(s, "vault:v")
		vs, b64, ok2 := strings.Cut(rest, ":")
		v, err := strconv.Atoi(vs)
		if !ok || !ok2 || err != nil || v < 1 {
			fail(w, http.StatusBadRequest, "invalid ciphertext: no prefix")
			return
		}
		if v > len(k.versions) {
			fail(w, http.StatusBadRequest, "invalid key version")
			return
		}
		if v < k.minDecrypt {
			fail(w, http.StatusBadRequest, "ciphertext or signature version is disallowed by policy (too old)")
			return
		}
		ct, err := base64.StdEncoding.DecodeString(b64)
		a, gerr := gcm(k.versions[v-1])
		if err != nil || gerr != nil || len(ct) < a.NonceSize() {
			fail(w, http.StatusBadRequest, "invalid ciphertext: could not decode")
			return
		}
		pt, err := a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], nil)
		if err != nil {
			fail(w, http.StatusBadRequest, "cipher: message authentication failed")
			return
		}
		reply(w, http.StatusOK, map[string]any{"data": map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)}})
	case len(parts) == 2 && parts[0] == "keys" && r.Method == http.MethodGet:
		t.calls["read"]++
		k, ok := t.keys[parts[1]]
		if !ok {
			reply(w, http.StatusNotFound, map[string]any{"errors": []string{}})
			return
		}
		reply(w, http.StatusOK, map[string]any{"data": map[string]any{
			"name": parts[1], "type": "aes256-gcm96", "latest_version": len(k.versions),
			"min_decryption_version": k.minDecrypt, "min_encryption_version": 0,
			"supports_encryption": true, "supports_decryption": true,
		}})
	case len(parts) == 2 && parts[0] == "keys" && write:
		if _, ok := t.keys[parts[1]]; !ok {
			if err := t.create(parts[1]); err != nil {
				fail(w, http.StatusInternalServerError, "%v", err)
				return
			}
		}
		reply(w, http.StatusNoContent, nil)
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "rotate" && write:
		t.calls["rotate"]++
		k, ok := t.keys[parts[1]]
		if !ok {
			fail(w, http.StatusBadRequest, "key not found")
			return
		}
		b := make([]byte, 32)
		rand.Read(b)
		k.versions = append(k.versions, b)
		reply(w, http.StatusNoContent, nil)
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "config" && write:
		k, ok := t.keys[parts[1]]
		if !ok {
			fail(w, http.StatusBadRequest, "no existing key named %s could be found", parts[1])
			return
		}
		if m, ok := body["min_decryption_version"]; ok {
			n, err := strconv.Atoi(fmt.Sprint(m))
			if err != nil || n < 1 {
				fail(w, http.StatusBadRequest, "min decryption version must be positive")
				return
			}
			if n > len(k.versions) {
				fail(w, http.StatusBadRequest, "cannot set min decryption version of %d, latest key version is %d", n, len(k.versions))
				return
			}
			k.minDecrypt = n
		}
		reply(w, http.StatusNoContent, nil)
	default:
		fail(w, http.StatusNotFound, "unsupported path")
	}
}
