use clap::{Args, CommandFactory as _};

/// Print shell completions (bash, zsh, fish, elvish, powershell).
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        let mut cmd = super::Cli::command();
        clap_complete::generate(self.shell, &mut cmd, "mif", &mut std::io::stdout());
        Ok(())
    }
}

/// Print the man page (roff), generated from the same definitions as --help.
#[derive(Debug, Args)]
pub struct ManArgs {}

impl ManArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        clap_mangen::Man::new(super::Cli::command()).render(&mut std::io::stdout())?;
        Ok(())
    }
}
