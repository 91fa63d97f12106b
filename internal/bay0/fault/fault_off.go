//go:build !faultinject

package fault

const enabled = false

const marker = ""

func builtinKind() string { return "" }
