package latch

import "testing"

func TestLatch(t *testing.T) {
	var l Latch
	select {
	case <-l.Done():
		t.Fatal("done before Close")
	default:
	}
	l.Close()
	l.Close() // a second Close is harmless
	select {
	case <-l.Done():
	default:
		t.Fatal("not done after Close")
	}
}
