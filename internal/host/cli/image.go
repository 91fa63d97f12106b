package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"alpinespine.org/spine/internal/format/audit"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/squashfs"
	"alpinespine.org/spine/internal/host/uefi/sbkeys"
)

func keygenCmd() command {
	return command{name: "keygen", synopsis: "write the owner's keys: the Ed25519 pair that signs Spines (spine.key, spine.pub) and the UEFI Secure Boot pair (uefi.key, uefi.crt)",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			out := fs.String("out", "", "directory for the keys; a pair already there is kept, existing keys are never overwritten")
			cn := fs.String("uefi-cn", sbkeys.DefaultCommonName, "common name of the Secure Boot certificate")
			return func(_ context.Context, env *Env, args []string) error {
				if *out == "" || len(args) != 0 {
					return errUsage
				}
				return keygen(env, *out, *cn)
			}
		}}
}

// keygen writes each key pair missing from dir. A pair already complete is kept, so a
// directory made before the Secure Boot pair existed gains it; a half pair is an error, and
// so is a directory where nothing is missing.
func keygen(env *Env, dir, cn string) error {
	pairs := []struct {
		a, b     string
		generate func() error
	}{
		{keys.PrivateFile, keys.PublicFile, func() error { return keys.Generate(dir) }},
		{sbkeys.KeyFile, sbkeys.CertFile, func() error { return sbkeys.Generate(dir, cn) }},
	}
	wrote := 0
	for _, p := range pairs {
		a, b := filepath.Join(dir, p.a), filepath.Join(dir, p.b)
		_, ea := os.Lstat(a)
		_, eb := os.Lstat(b)
		switch {
		case ea == nil && eb == nil:
			fmt.Fprintf(env.Stdout, "kept %s and %s\n", a, b)
			continue
		case ea == nil || eb == nil:
			return fmt.Errorf("refuse to overwrite existing key: only one of %s and %s exists", a, b)
		}
		if err := p.generate(); err != nil {
			return err
		}
		wrote++
		fmt.Fprintf(env.Stdout, "wrote %s and %s\n", a, b)
	}
	if wrote == 0 {
		return fmt.Errorf("refuse to overwrite existing keys in %s", dir)
	}
	return nil
}

func buildCmd() command {
	return command{name: "build", synopsis: "build and sign a Spine image from a TOML configuration",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			cfg := fs.String("config", "", "build configuration (TOML)")
			key := fs.String("key", "", "signing key (PKCS#8 PEM)")
			out := fs.String("out", "", "image file to write")
			bay0 := fs.String("bay0", "", "static bay0 binary (default: bay0 beside the spine executable)")
			personaInit := fs.String("persona-init", "", "static persona-init binary, the init of every persona (default: persona-init beside the bay0 binary)")
			version := fs.Uint64("version", 0, "override the configuration's version")
			kern := fs.String("kernel", "spine", "kernel image the Spine carries: \"spine\" (Spine's kernel, built on first use), a bzImage path, or \"none\" (boots only under a kernel the host hands QEMU)")
			return func(ctx context.Context, env *Env, args []string) error {
				if *cfg == "" || *key == "" || *out == "" || len(args) != 0 {
					return errUsage
				}
				priv, err := keys.LoadPrivate(*key)
				if err != nil {
					return err
				}
				b := *bay0
				if b == "" {
					if b, err = besideExecutable("bay0"); err != nil {
						return err
					}
				}
				// bay0 and persona-init are built together (make build puts both in bin/).
				pi := *personaInit
				if pi == "" {
					pi = filepath.Join(filepath.Dir(b), "persona-init")
				}
				epoch, err := sourceDateEpoch(env)
				if err != nil {
					return err
				}
				// The Spine carries its kernel: stage 0 starts it, and an update replaces it with
				// the rest.
				release, image, err := spineKernel(ctx, env, *kern)
				if err != nil {
					return err
				}
				m, err := build.Build(ctx, build.Options{Config: *cfg, Key: priv, Bay0: b, PersonaInit: pi, Out: *out,
					Epoch: epoch, Version: *version, Kernel: release, KernelImage: image})
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "built %s: %s v%d, root hash %s\n", *out, m.Name, m.Version, m.RootHash)
				return nil
			}
		}}
}

// spineKernel resolves spine build's --kernel into the release the manifest names and the
// image the Spine carries ("" for none).
func spineKernel(ctx context.Context, env *Env, choice string) (release, image string, err error) {
	switch choice {
	case "spine":
		k, err := kernel.Default(ctx, env.Stderr)
		if err != nil {
			return "", "", err
		}
		return k.Release, k.Image, nil
	case "none":
		// The manifest still names the release the installed source builds.
		src, err := kernel.InstalledSource(ctx)
		if err != nil {
			return "", "", err
		}
		return src.Release(), "", nil
	}
	release, err = kernel.ImageRelease(choice)
	if err != nil {
		return "", "", err
	}
	return release, choice, nil
}

func inspectCmd() command {
	return command{name: "inspect", synopsis: "print an image's manifest (not verified: use spine verify)", usage: "IMG",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			asJSON := fs.Bool("json", false, "print the manifest as indented JSON")
			raw := fs.Bool("manifest", false, "write the exact signed manifest bytes")
			sig := fs.Bool("signature", false, "write the raw 64-byte Ed25519 signature")
			return func(_ context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				im, f, err := image.OpenFile(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				switch {
				case *raw:
					_, err = env.Stdout.Write(im.ManifestBytes)
					return err
				case *sig:
					_, err = env.Stdout.Write(im.Signature)
					return err
				}
				m, err := manifest.Parse(im.ManifestBytes)
				if err != nil {
					return err
				}
				if *asJSON {
					var b bytes.Buffer
					if err := json.Indent(&b, im.ManifestBytes, "", "  "); err != nil {
						return fmt.Errorf("indent manifest: %w", err)
					}
					b.WriteByte('\n')
					_, err = env.Stdout.Write(b.Bytes())
					return err
				}
				w := env.Stdout
				fmt.Fprintf(w, "name:          %s\nversion:       %d\nconstitution:  %s\nkernel:        %s\n", m.Name, m.Version, m.Constitution, m.Kernel)
				if m.KernelSHA256 != "" {
					fmt.Fprintf(w, "kernel sha256: %s\n", m.KernelSHA256)
				}
				fmt.Fprintf(w, "build time:    %d\npersonas:      %v\n", m.BuildTime, m.Personas)
				fmt.Fprintf(w, "root hash:     %s\nsalt:          %s\nhash:          %s, %d-byte data blocks, %d-byte hash blocks\n", m.RootHash, m.Salt, m.HashAlgorithm, m.DataBlockSize, m.HashBlockSize)
				fmt.Fprintf(w, "data:          %d blocks (%d bytes)\nhash area:     %d bytes at offset %d\nimage size:    %d bytes\n", m.DataBlocks, m.DataBlocks*uint64(m.DataBlockSize), m.HashSize, m.HashOffset, im.Footer.ImageSize)
				return nil
			}
		}}
}

func verifyCmd() command {
	return command{name: "verify", synopsis: "check an image's footer, signature, manifest and every block of its hash tree", usage: "IMG",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key (PKIX PEM); repeat for several")
			return func(_ context.Context, env *Env, args []string) error {
				if len(args) != 1 || len(pubs) == 0 {
					return errUsage
				}
				trusted, err := keys.LoadPublic(pubs...)
				if err != nil {
					return err
				}
				m, err := image.CheckFile(args[0], trusted, 0)
				if err != nil {
					return &ExitError{Code: 1, Err: fmt.Errorf("%s is not a valid Spine: %w", args[0], err)}
				}
				fmt.Fprintf(env.Stdout, "valid: %s v%d root hash %s\n", m.Name, m.Version, m.RootHash)
				return nil
			}
		}}
}

func auditCmd() command {
	return command{name: "audit", synopsis: "check a Spine tree or image against the constitution", usage: "DIR|IMG",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				files, read, err := auditInput(ctx, args[0])
				if err != nil {
					return err
				}
				vs := audit.Check(files, read)
				for _, v := range vs {
					fmt.Fprintln(env.Stdout, v)
				}
				if len(vs) > 0 {
					return &ExitError{Code: 1, Err: fmt.Errorf("%d violations", len(vs))}
				}
				fmt.Fprintf(env.Stdout, "%s: no violations in %d entries\n", args[0], len(files))
				return nil
			}
		}}
}

func auditInput(ctx context.Context, p string) ([]audit.File, audit.Reader, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		files, err := audit.Dir(p, nil)
		return files, audit.DirReader(p), err
	}
	entries, err := squashfs.List(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	files := make([]audit.File, 0, len(entries))
	for _, e := range entries {
		files = append(files, audit.File{Path: e.Path, Mode: e.Mode})
	}
	return files, func(rel string) ([]byte, error) { return squashfs.Cat(ctx, p, rel) }, nil
}

func besideExecutable(name string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate spine executable: %w", err)
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no %s beside %s (give its path with a flag, or run make build): %w", name, exe, err)
	}
	return p, nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH; -1 when unset (a non-reproducible build).
func sourceDateEpoch(env *Env) (int64, error) {
	s := env.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a non-negative integer", s)
	}
	return v, nil
}
