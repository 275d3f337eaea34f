//! The `berth` binary: everything is in the library's `cli` module.

fn main() -> anyhow::Result<()> {
    berth::cli::main()
}
