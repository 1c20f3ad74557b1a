package erasure

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

func TestReduceQuorum(t *testing.T) {
	nf := func(i int) error { return fmt.Errorf("node %d: %w", i, chunkstore.ErrNotFound) }
	un := func(i int) error { return fmt.Errorf("node %d: %w", i, chunkstore.ErrUnavailable) }
	co := func(i int) error { return fmt.Errorf("node %d: %w", i, chunkstore.ErrCorrupt) }
	other := errors.New("disk on fire")
	tests := []struct {
		name        string
		errs        []error
		quorum      int
		ok          bool
		is, isNot   []error
		wantInError string
	}{
		{"all ok", []error{nil, nil, nil}, 3, true, nil, nil, ""},
		{"exact quorum", []error{nil, un(1), nil, nil, nil, un(5)}, 4, true, nil, nil, ""},
		{"zero quorum", []error{un(0)}, 0, true, nil, nil, ""},
		{"all not found", []error{nf(0), nf(1), nf(2)}, 2, false,
			[]error{chunkstore.ErrNotFound}, []error{chunkstore.ErrUnavailable}, "3 of 3 shards failed, need 2 ok"},
		{"all canceled", []error{context.Canceled, context.Canceled}, 1, false,
			[]error{context.Canceled}, []error{chunkstore.ErrUnavailable}, "2 of 2"},
		{"mixed, most not found", []error{nil, nf(1), nf(2), un(3), nil, nil}, 5, false,
			[]error{chunkstore.ErrNotFound, chunkstore.ErrUnavailable}, []error{chunkstore.ErrCorrupt}, "3 of 6 shards failed, need 5 ok: node 1"},
		{"mixed, most corrupt", []error{co(0), co(1), nf(2), nil}, 2, false,
			[]error{chunkstore.ErrCorrupt, chunkstore.ErrUnavailable}, []error{chunkstore.ErrNotFound}, "node 2"},
		{"unavailable", []error{un(0), un(1), nil}, 2, false,
			[]error{chunkstore.ErrUnavailable}, []error{chunkstore.ErrNotFound}, "node 0"},
		{"unknown errors", []error{other, other, nil}, 2, false,
			[]error{other, chunkstore.ErrUnavailable}, nil, "disk on fire"},
		{"tie goes to earlier class", []error{co(0), nf(1)}, 1, false,
			[]error{chunkstore.ErrNotFound, chunkstore.ErrUnavailable}, nil, "node 1"},
		{"too few entries", []error{nil}, 3, false,
			[]error{chunkstore.ErrUnavailable}, nil, "1 of 1 shards ok, need 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ReduceQuorum(tc.errs, tc.quorum)
			if tc.ok {
				if err != nil {
					t.Fatalf("ReduceQuorum = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ReduceQuorum = nil, want an error")
			}
			for _, s := range tc.is {
				if !errors.Is(err, s) {
					t.Errorf("%v: does not match %v", err, s)
				}
			}
			for _, s := range tc.isNot {
				if errors.Is(err, s) {
					t.Errorf("%v: matches %v", err, s)
				}
			}
			if !strings.Contains(err.Error(), tc.wantInError) {
				t.Errorf("%q does not contain %q", err, tc.wantInError)
			}
		})
	}
}

func TestReduceQuorumListsDistinctFailures(t *testing.T) {
	var errs []error
	for i := range 10 {
		errs = append(errs, fmt.Errorf("node %d: %w", i, chunkstore.ErrUnavailable))
	}
	err := ReduceQuorum(errs, 1)
	for i := range maxListed + 1 {
		if !strings.Contains(err.Error(), fmt.Sprintf("node %d:", i)) {
			t.Errorf("%q does not name node %d", err, i)
		}
	}
	if strings.Contains(err.Error(), "node 9:") || !strings.Contains(err.Error(), "…") {
		t.Errorf("%q lists too much or does not mark the cut", err)
	}
}
