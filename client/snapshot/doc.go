// Package snapshot loads and saves a snapshot's trees: it fetches a tree chunk, opens it
// under the vault's keys (which verifies it against its ID), decodes it and, for a
// backup, keeps it in the local tree cache, whose pack file format is in FORMAT.md.
//
// Trees is the one way the agent reads a tree (backup, list, expand, restore and block
// backup all use it) and the way a backup encodes and names a new one; Cache is the
// local cache of one backup set's trees; Prefetch loads trees ahead of a depth-first
// walk.
package snapshot
