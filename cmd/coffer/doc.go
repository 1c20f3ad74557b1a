// Command coffer is the Coffer agent and admin CLI: it creates vaults, backs up and
// restores files, lists snapshots and their contents, and reports cluster status.
//
// It is one binary in the shape of restic or kubectl: global flags, then a command, then
// the command's flags and arguments (flags may follow arguments). Each command lives in
// its own file, cmd_<noun>_<verb>.go or cmd_<verb>.go, as an options struct with
// addFlags and run. The whole program is driven through
//
//	run(ctx, args, stdin, stdout, stderr, getenv) int
//
// which reads the environment and standard streams only through its arguments (besides
// /dev/tty for passphrase prompts and the working directory for the default coffer.yaml),
// so tests can drive it directly.
//
// Exit codes: 0 success, 1 failure, 2 usage error, 3 backup completed but some files
// could not be read. The user guide is docs/cli.md.
package main
