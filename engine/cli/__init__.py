"""The commands: `vae-engine` trains (`engine.main`); its tools are subcommands, one module each (`vae-engine evaluate ...`)."""
