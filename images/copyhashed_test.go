package images

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestCopyHashed copies sources of several sizes and behaviours and checks
// what the destination got, the count, the error, and that the hash saw
// exactly the bytes copied, in order.
func TestCopyHashed(t *testing.T) {
	data := make([]byte, 5<<20+777)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	errSource := errors.New("connection reset")
	errDisk := errors.New("no space left on device")
	for _, tc := range []struct {
		name    string
		src     io.Reader
		dst     func(*bytes.Buffer) io.Writer
		want    int // bytes that reach dst
		wantErr error
	}{
		{"empty", bytes.NewReader(nil), nil, 0, nil},
		{"less than a buffer", bytes.NewReader(data[:1000]), nil, 1000, nil},
		{"exactly four buffers", bytes.NewReader(data[:4<<20]), nil, 4 << 20, nil},
		{"more buffers than the ring", bytes.NewReader(data), nil, len(data), nil},
		{"a byte at a time for a while", io.MultiReader(iotest.OneByteReader(bytes.NewReader(data[:3000])), bytes.NewReader(data[3000:])), nil, len(data), nil},
		{"half reads", iotest.HalfReader(bytes.NewReader(data)), nil, len(data), nil},
		{"data with EOF", iotest.DataErrReader(bytes.NewReader(data)), nil, len(data), nil},
		{"the source fails", io.MultiReader(bytes.NewReader(data[:3<<20+5]), iotest.ErrReader(errSource)), nil, 3<<20 + 5, errSource},
		{"the body is cut short", io.MultiReader(bytes.NewReader(data[:7]), iotest.ErrReader(io.ErrUnexpectedEOF)), nil, 7, io.ErrUnexpectedEOF},
		{"the disk fails", bytes.NewReader(data), func(b *bytes.Buffer) io.Writer { return &failAfter{w: b, left: 2<<20 + 10, err: errDisk} }, 2<<20 + 10, errDisk},
		{"a short write", bytes.NewReader(data), func(b *bytes.Buffer) io.Writer { return &failAfter{w: b, left: 1 << 19} }, 1 << 19, io.ErrShortWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			var dst io.Writer = &got
			if tc.dst != nil {
				dst = tc.dst(&got)
			}
			h := sha256.New()
			n, err := copyHashed(dst, h, tc.src)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if n != int64(tc.want) || got.Len() != tc.want {
				t.Fatalf("copied %d (dst has %d), want %d", n, got.Len(), tc.want)
			}
			if !bytes.Equal(got.Bytes(), data[:tc.want]) {
				t.Fatal("the destination's bytes differ from the source's")
			}
			if tc.wantErr != nil {
				return // the hash is of no use after an error
			}
			if sum := sha256.Sum256(data[:tc.want]); !bytes.Equal(h.Sum(nil), sum[:]) {
				t.Fatal("the hash is not of the bytes copied")
			}
		})
	}
}

// failAfter writes left bytes to w and then fails with err; with err nil
// it writes short, without an error, as a broken io.Writer might.
type failAfter struct {
	w    io.Writer
	left int
	err  error
}

func (f *failAfter) Write(b []byte) (int, error) {
	if len(b) <= f.left {
		f.left -= len(b)
		return f.w.Write(b)
	}
	n, _ := f.w.Write(b[:f.left])
	f.left = 0
	return n, f.err
}
