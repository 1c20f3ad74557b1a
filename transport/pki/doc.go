// Package pki issues and loads the certificates of a Coffer cluster: an ECDSA P-256 cluster
// CA, node/admin/agent certificates that carry the principal in the CommonName and the role
// in the OrganizationalUnit, and the mutual-TLS 1.3 configurations built from them.
//
// Trust model: a peer is whoever holds a certificate issued by the cluster CA. Nodes are
// identified by certificate, not by address, so host names are never checked; a client
// accepts a server only if its chain verifies against the cluster CA for server auth and
// its role is "node". Servers require a client certificate from the cluster CA.
package pki
