package seccomp

//go:generate go run ../../../tools/gensysnum sysnum_amd64.go
