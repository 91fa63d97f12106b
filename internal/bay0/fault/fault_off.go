//go:build !faultinject

package fault

const enabled = false

const marker = ""
