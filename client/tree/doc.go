// Package tree encodes and decodes Coffer directory listings ("trees"): one deterministic
// CBOR document per directory, its entries sorted by name, stored as an encrypted chunk.
//
// A Tree lists the Nodes of one directory. Directory nodes point to the tree of their
// subdirectory (Subtree), file nodes list their content as Extents (chunk IDs, or holes
// that are not stored). Trees therefore form a Merkle DAG rooted at a snapshot's Tree ID.
//
// Encode and Decode are pure functions, safe for concurrent use. Both refuse invalid trees
// (unsorted or duplicate names, names that could escape a restore directory, inconsistent
// nodes) with an error wrapping ErrInvalid. The byte format is specified in FORMAT.md.
package tree
