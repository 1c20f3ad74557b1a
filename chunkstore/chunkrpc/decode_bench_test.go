package chunkrpc

import (
	"bytes"
	"io"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport/wire"
)

// trickle hands out at most n bytes per Read, as a QUIC stream or a TLS connection does.
type trickle struct {
	r io.Reader
	n int
}

func (t trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), t.n)]) }

// BenchmarkReceiveShardPut is what a node does with the bytes of one shard.Put call of
// 64 shards of 128 KiB (8 MiB, the MaxCallData of a call) before its store sees them:
// read the frame from a stream that delivers 16 KiB at a time, then decode the request.
// Every copy of the shard bytes on the way is in the figure.
func BenchmarkReceiveShardPut(b *testing.B) {
	req := shardPutReq{Shards: make([]wShard, 64)}
	total := 0
	for i := range req.Shards {
		d := make([]byte, 128<<10)
		for j := range d {
			d[j] = byte(i + j*7)
		}
		req.Shards[i] = wShard{Key: wKey{ID: chunk.ID{byte(i)}, Index: uint8(i % 6)}, Meta: wMeta{K: 4, M: 2, ChunkLen: 512 << 10}, Data: d}
		total += len(d)
	}
	body, err := wire.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	var frame bytes.Buffer
	if err := wire.WriteRequest(&frame, MethodShardPut, body); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	r := bytes.NewReader(frame.Bytes())
	for b.Loop() {
		r.Reset(frame.Bytes())
		_, got, err := wire.ReadRequest(trickle{r, 16 << 10})
		if err != nil {
			b.Fatal(err)
		}
		var dec shardPutReq
		if err := wire.Unmarshal(got, &dec); err != nil {
			b.Fatal(err)
		}
		if len(dec.Shards) != 64 || len(dec.Shards[63].Data) != 128<<10 {
			b.Fatal("bad decode")
		}
	}
}
