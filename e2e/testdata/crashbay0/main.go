// Command crashbay0 stands in for a broken Spine's /bin/bay0: it dies at once, so the Spine
// never reaches its governor. The boot law must still run out its tries and fall back.
package main

func main() {
	panic("crashbay0: this Spine's bay0 dies before its governor starts")
}
