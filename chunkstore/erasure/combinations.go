package erasure

// Combinations calls fn with each k-subset of [0, n) in lexicographic order until fn
// returns false. The slice passed to fn is reused between calls. Readers use it to try
// other sets of k shards when a rebuilt stripe fails its checksum.
func Combinations(n, k int, fn func([]int) bool) {
	if k > n || k <= 0 {
		return
	}
	pick := make([]int, k)
	for i := range pick {
		pick[i] = i
	}
	for {
		if !fn(pick) {
			return
		}
		i := k - 1
		for i >= 0 && pick[i] == n-k+i {
			i--
		}
		if i < 0 {
			return
		}
		pick[i]++
		for j := i + 1; j < k; j++ {
			pick[j] = pick[j-1] + 1
		}
	}
}
