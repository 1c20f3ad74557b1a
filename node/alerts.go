package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport/wire"
)

// certExpiryWarning is how long before its end a certificate raises a cert-expiry alert.
const certExpiryWarning = 30 * 24 * time.Hour

// RetentionConfig schedules automatic retention (meta role; the leader runs it).
type RetentionConfig struct {
	// Interval is the cluster time between rounds that apply every vault's stored
	// retention policy; 0 means 1 hour, negative disables them (`coffer forget` and
	// `coffer admin retention run` still work).
	Interval time.Duration `yaml:"interval,omitempty"`
}

// AlertsConfig configures alert delivery on a meta node (sinks themselves are stored
// in the cluster: `coffer admin alert add`).
type AlertsConfig struct {
	// Commands lists the programs (absolute paths) this meta server may run for command
	// sinks. An admin can store any command sink, but only the programs a host's
	// operator lists here run: give every meta node the same list.
	Commands []string `yaml:"commands,omitempty"`
	// RetryBase is the wait after a first failed delivery, doubled after each further
	// one; 0 means 5 s.
	RetryBase time.Duration `yaml:"retry_base,omitempty"`
}

// alertProbe reports the conditions only the node layer sees, for the meta leader's
// alerts: chunk nodes whose store uses more than meta.AlertCapacityPercent of the space
// available to it (shard bytes / (shard bytes + free bytes)), and this server's own
// certificate within certExpiryWarning of its end. A node that cannot be asked keeps
// capacity out of covered, so its open alert is not resolved by a failed probe.
func (n *Node) alertProbe(ctx context.Context) ([]meta.Alert, []meta.AlertKind, error) {
	var out []meta.Alert
	covered := []meta.AlertKind{meta.AlertCertExpiry}
	if leaf := n.id.Leaf(); leaf != nil {
		if left := leaf.NotAfter.Sub(n.deps.Now()); left < certExpiryWarning {
			sev := meta.SeverityWarning
			if left < 7*24*time.Hour {
				sev = meta.SeverityCritical
			}
			out = append(out, meta.Alert{Key: fmt.Sprintf("%s/%s", meta.AlertCertExpiry, leaf.SerialNumber.Text(16)), Kind: meta.AlertCertExpiry,
				Severity: sev, Subject: leaf.Subject.CommonName,
				Message: fmt.Sprintf("the certificate of %s (serial %s) ends %s (in %s); renew it", leaf.Subject.CommonName, leaf.SerialNumber.Text(16),
					leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Hour)),
				Details: map[string]string{"serial": leaf.SerialNumber.Text(16), "not_after": leaf.NotAfter.UTC().Format(time.RFC3339)}})
		}
	}
	m := n.cmap.Load()
	if m == nil {
		return out, covered, errors.New("node: alert probe: no cluster map yet")
	}
	var errs []error
	for _, nd := range m.Nodes {
		switch nd.State {
		case placement.StateDecommissioned, placement.StateDown, placement.StateOut:
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var st meta.NodeStatus
		var err error
		if nd.ID == placement.NodeID(n.cfg.ID) {
			st, err = n.Status(cctx)
		} else {
			err = wire.Call(cctx, n.ep, nd.Addr, methodStatus, struct{}{}, &st)
		}
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", nd.ID, err))
			continue
		}
		sh := st.Shards
		if sh.Capacity <= 0 {
			continue
		}
		used := float64(sh.Bytes) * 100 / float64(sh.Bytes+sh.Capacity)
		if used <= meta.AlertCapacityPercent {
			continue
		}
		out = append(out, meta.Alert{Key: fmt.Sprintf("%s/%s", meta.AlertCapacity, nd.ID), Kind: meta.AlertCapacity, Severity: meta.SeverityWarning,
			Subject: string(nd.ID), Message: fmt.Sprintf("chunk node %s uses %.1f%% of its space (%d bytes of shards, %d free), above %d%%", nd.ID, used, sh.Bytes, sh.Capacity, meta.AlertCapacityPercent),
			Details: map[string]string{"node": string(nd.ID), "used_percent": fmt.Sprintf("%.1f", used)}})
	}
	if len(errs) == 0 {
		covered = append(covered, meta.AlertCapacity)
	}
	return out, covered, errors.Join(errs...)
}
