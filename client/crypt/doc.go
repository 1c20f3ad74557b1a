// Package crypt seals and opens chunks, derives a vault's key hierarchy and keyed chunk
// IDs, and wraps a vault master key under a passphrase.
//
// Everything here runs on the agent: the cluster only ever sees sealed envelopes and
// wrapped keys. The byte layouts (envelope, wrapping) and the key hierarchy are specified
// in FORMAT.md beside this file; they are part of the on-disk format and change only as
// described there.
//
// A vault's random MasterKey is expanded by DeriveKeys into a *Keys value holding the ID
// key (keyed chunk IDs), the data key (per-chunk AES-256-GCM keys) and the gear seed (the
// chunker's gear table). A *Keys is safe for concurrent use by any number of goroutines;
// it starts no goroutines and needs no Close.
//
//	mk, err := crypt.NewMasterKey(rand.Reader)
//	keys := crypt.DeriveKeys(mk)
//	id := keys.ChunkID(plain)
//	sealed, err := keys.Seal(nil, id, plain)
//	plain2, err := keys.Open(nil, id, sealed) // checks ChunkID(plain2) == id
//	wrapped, err := crypt.WrapKey(mk, passphrase, crypt.DefaultArgon2Params(), rand.Reader)
//	mk2, err := crypt.UnwrapKey(wrapped, passphrase)
package crypt
