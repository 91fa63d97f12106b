package syscalls

//go:generate go run ../../../tools/gensysnum table_amd64.go
