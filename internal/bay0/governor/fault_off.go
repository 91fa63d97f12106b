//go:build !faultinject

package governor

const faultInjection = false

const faultMarker = ""
