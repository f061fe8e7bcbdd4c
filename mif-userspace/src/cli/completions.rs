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
pub struct ManArgs {
    /// Write a page per command instead, git-style (mif.1, mif-daemon.1,
    /// mif-policy-set.1, ...), into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

impl ManArgs {
    pub fn execute(self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        match self.dir {
            None => clap_mangen::Man::new(super::Cli::command()).render(&mut std::io::stdout())?,
            Some(dir) => clap_mangen::generate_to(super::Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?,
        }
        Ok(())
    }
}
