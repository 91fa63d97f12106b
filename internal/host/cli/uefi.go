package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/stage0"
	"alpinespine.org/spine/internal/host/uefi/authenticode"
	"alpinespine.org/spine/internal/host/uefi/efivars"
	"alpinespine.org/spine/internal/host/uefi/fat"
	"alpinespine.org/spine/internal/host/uefi/ovmf"
	"alpinespine.org/spine/internal/host/uefi/sbkeys"
	"alpinespine.org/spine/internal/host/vm"
)

func uefiVarsCmd() command {
	return command{name: "uefi-vars", synopsis: "write an OVMF variable store with Secure Boot on and the owner's certificate enrolled as PK, KEK and db",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			cert := fs.String("cert", "", "the owner's Secure Boot certificate (uefi.crt from spine keygen; PEM or DER)")
			out := fs.String("out", "", "variable store to write (pflash unit 1 beside "+ovmf.Code+")")
			tmpl := fs.String("template", ovmf.VarsTemplate, "empty OVMF variable store to start from")
			return func(_ context.Context, env *Env, args []string) error {
				if *cert == "" || *out == "" || len(args) != 0 {
					return errUsage
				}
				c, err := sbkeys.LoadCert(*cert)
				if err != nil {
					return err
				}
				b, err := WriteUEFIVars(*tmpl, c.Raw)
				if err != nil {
					return err
				}
				if err := writeAtomic(*out, func(f *os.File) error {
					_, err := f.Write(b)
					return err
				}); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "wrote %s: Secure Boot on, PK, KEK and db hold %q\n", *out, c.Subject.CommonName)
				return nil
			}
		}}
}

// WriteUEFIVars returns the template variable store with certDER enrolled.
func WriteUEFIVars(template string, certDER []byte) ([]byte, error) {
	raw, err := os.ReadFile(template)
	if err != nil {
		return nil, fmt.Errorf("read variable store template (install the Debian package ovmf): %w", err)
	}
	s, err := efivars.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("variable store template %s: %w", template, err)
	}
	if err := s.EnrollOwner(certDER); err != nil {
		return nil, err
	}
	return s.Bytes(), nil
}

// bootFlags are spine disk's flags for the EFI system partition.
type bootFlags struct {
	program, key, cert, size, bay0 *string
}

func addBootFlags(fs *flag.FlagSet) bootFlags {
	return bootFlags{
		program: fs.String("boot-program", "", "UEFI boot program (a PE/EFI binary) to sign and install as \\"+strings.ReplaceAll(provision.BootProgramPath, "/", "\\")+" instead of stage 0; needs --uefi-key and --uefi-cert"),
		key:     fs.String("uefi-key", "", "Secure Boot key that signs the boot program (uefi.key from spine keygen); with --uefi-cert, the disk boots by itself through UEFI"),
		cert:    fs.String("uefi-cert", "", "certificate of --uefi-key (uefi.crt), enrolled in the machine's db"),
		size:    fs.String("esp-size", "64MiB", "size of the EFI system partition (FAT32, at least 33MiB)"),
		bay0:    fs.String("bay0", "", "static bay0 built into stage 0 (default: bay0 beside the spine executable)"),
	}
}

// files returns the EFI system partition's files and its size: nil without --uefi-key and
// --uefi-cert; else the signed boot program, stage 0 (built with Spine's kernel, bay0 and the
// trusted keys pubs) unless --boot-program names another.
func (f bootFlags) files(ctx context.Context, env *Env, pubs []string) ([]fat.File, int64, error) {
	if *f.key == "" && *f.cert == "" {
		if *f.program != "" {
			return nil, 0, fmt.Errorf("--boot-program needs --uefi-key and --uefi-cert: the firmware runs only signed boot programs")
		}
		return nil, 0, nil
	}
	if *f.key == "" || *f.cert == "" {
		return nil, 0, fmt.Errorf("--uefi-key and --uefi-cert go together: the key signs, the certificate is what the firmware trusts")
	}
	size, err := policy.ParseSize(*f.size)
	if err != nil {
		return nil, 0, err
	}
	program := *f.program
	if program == "" {
		if program, err = f.buildStage0(ctx, env, pubs); err != nil {
			return nil, 0, err
		}
	}
	signed, err := SignBootProgram(program, *f.key, *f.cert)
	if err != nil {
		return nil, 0, err
	}
	return []fat.File{{Path: provision.BootProgramPath, Data: signed}}, int64(size), nil
}

// buildStage0 builds stage 0 in the kernel cache and returns its image's path.
func (f bootFlags) buildStage0(ctx context.Context, env *Env, pubs []string) (string, error) {
	if len(pubs) == 0 {
		return "", fmt.Errorf("stage 0 verifies the slots with the trusted keys: give them with --pub")
	}
	if _, err := keys.LoadPublic(pubs...); err != nil {
		return "", err
	}
	var trusted [][]byte
	for _, p := range pubs {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		trusted = append(trusted, b)
	}
	path := *f.bay0
	if path == "" {
		var err error
		if path, err = besideExecutable("bay0"); err != nil {
			return "", err
		}
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read bay0: %w", err)
	}
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		return "", err
	}
	k, err := stage0.Build(ctx, cache, stage0.Spec{Bay0: bin, TrustedKeys: trusted}, env.Stderr)
	if err != nil {
		return "", fmt.Errorf("build stage 0: %w", err)
	}
	return k.Image, nil
}

// SignBootProgram returns the PE image at path signed with the Secure Boot key pair.
func SignBootProgram(path, keyPath, certPath string) ([]byte, error) {
	pair, err := sbkeys.Load(keyPath, certPath)
	if err != nil {
		return nil, err
	}
	img, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read boot program: %w", err)
	}
	signed, err := authenticode.Sign(img, authenticode.Signer{Key: pair.Key, Cert: pair.Cert})
	if err != nil {
		return nil, fmt.Errorf("sign boot program %s: %w", path, err)
	}
	return signed, nil
}

// firmware returns the firmware of a machine booted through UEFI with vars as its NVRAM. Such
// a machine gets nothing from the host but its disk, so kernel, initramfs and command line
// flags are refused rather than ignored.
func firmware(vars, kernel, initrd, cmdline string) (*vm.Firmware, error) {
	if kernel != "" || initrd != "" || cmdline != "" {
		return nil, fmt.Errorf("--uefi-vars boots the disk through firmware: --kernel, --initrd and --append do not apply")
	}
	if err := ovmf.Check(); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(vars)
	if err != nil {
		return nil, fmt.Errorf("read UEFI variable store: %w", err)
	}
	if _, err := efivars.Parse(raw); err != nil {
		return nil, fmt.Errorf("UEFI variable store %s: %w", vars, err)
	}
	return &vm.Firmware{Code: ovmf.Code, Vars: vars}, nil
}
