//go:build race

package bench

// raceEnabled: the race detector slows the compressors about 20x, so the stage smoke
// test runs them only without it (make test-short, go test ./bench/).
const raceEnabled = true
