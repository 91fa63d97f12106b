package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/registry"
)

func pushCmd() command {
	return command{name: "push", synopsis: "publish a Spine image to an OCI registry as an artifact (credentials from the docker configuration)", usage: "IMG REGISTRY/REPO[:TAG|@sha256:DIGEST]",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key: check the image against it before publishing (repeat for several)")
			insecure := fs.Bool("insecure", false, "allow plain HTTP to the registry (localhost always may)")
			asJSON := fs.Bool("json", false, "print what was published as JSON")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 2 {
					return errUsage
				}
				var trusted []ed25519.PublicKey
				if len(pubs) > 0 {
					var err error
					if trusted, err = keys.LoadPublic(pubs...); err != nil {
						return err
					}
				}
				p, err := registry.Push(ctx, args[0], args[1], trusted, registry.Options{Insecure: *insecure})
				if err != nil {
					return err
				}
				if *asJSON {
					return printPublished(env, p)
				}
				fmt.Fprintf(env.Stdout, "pushed %s v%d to %s\n", p.Spine.Name, p.Spine.Version, p.Ref)
				return nil
			}
		}}
}

func pullCmd() command {
	return command{name: "pull", synopsis: "fetch a Spine image from an OCI registry and check it against the trusted keys", usage: "REGISTRY/REPO[:TAG|@sha256:DIGEST]",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key (PKIX PEM); repeat for several")
			out := fs.String("out", "", "image file to write; written only once the image has checked")
			insecure := fs.Bool("insecure", false, "allow plain HTTP to the registry (localhost always may)")
			asJSON := fs.Bool("json", false, "print what was fetched as JSON")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 || len(pubs) == 0 || *out == "" {
					return errUsage
				}
				trusted, err := keys.LoadPublic(pubs...)
				if err != nil {
					return err
				}
				p, m, err := registry.Pull(ctx, args[0], *out, trusted, registry.Options{Insecure: *insecure})
				if err != nil {
					return err
				}
				if *asJSON {
					return printPublished(env, p)
				}
				fmt.Fprintf(env.Stdout, "pulled %s v%d (root hash %s) from %s into %s\n", m.Name, m.Version, m.RootHash, p.Ref, *out)
				return nil
			}
		}}
}

func printPublished(env *Env, p registry.Published) error {
	b, err := json.MarshalIndent(map[string]any{
		"ref": p.Ref, "digest": p.Digest, "image_digest": p.ImageDigest, "size": p.Size,
		"name": p.Spine.Name, "version": p.Spine.Version, "root_hash": p.Spine.RootHash,
	}, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}
