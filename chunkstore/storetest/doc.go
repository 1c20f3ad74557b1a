// Package storetest holds conformance suites that every chunkstore.ShardStore,
// chunkstore.GCStore and chunkstore.Store implementation runs from its own tests
// (RunShardStore, RunGCStore, RunStore).
//
// Usage:
//
//	func TestConformance(t *testing.T) {
//		storetest.RunShardStore(t, func(t *testing.T) chunkstore.ShardStore {
//			s, err := segstore.Open(t.TempDir(), segstore.Options{NoSync: true})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// open is called once per subtest and must return a fresh, empty store; it registers any
// cleanup with t.Cleanup. The suites use small, deterministic data so that they run
// quickly under -race.
package storetest
