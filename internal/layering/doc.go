// Package layering holds the test that keeps metal's imports pointing down
// the layers ARCHITECTURE.md draws; it has no code of its own.
package layering
