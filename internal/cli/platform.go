package cli

// platformCmds are the commands that prepare and boot machines.
func platformCmds() []command { return nil }
