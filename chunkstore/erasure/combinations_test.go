package erasure

import (
	"slices"
	"testing"
)

func TestCombinations(t *testing.T) {
	var got [][]int
	Combinations(4, 2, func(p []int) bool { got = append(got, slices.Clone(p)); return true })
	want := [][]int{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("Combinations(4,2) = %v", got)
	}
	n := 0
	Combinations(11, 8, func([]int) bool { n++; return n < 5 })
	if n != 5 {
		t.Fatalf("stop after 5: %d calls", n)
	}
}
