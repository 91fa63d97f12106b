// Command ociapp is the workload of the OCI-image persona of the e2e suite: it reports how it
// was started (arguments, two environment variables, working directory) every two seconds, so
// that the test can see the image's entrypoint, env and workdir applied.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	cwd, _ := os.Getwd()
	for {
		fmt.Printf("ociapp: args %q OCI_MARK=%s MODE=%s cwd %s\n", os.Args[1:], os.Getenv("OCI_MARK"), os.Getenv("MODE"), cwd)
		time.Sleep(2 * time.Second)
	}
}
