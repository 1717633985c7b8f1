use clap::Args;
#[derive(Args, Debug)]
pub struct TourArgs {}
pub fn run(_a: TourArgs) -> anyhow::Result<()> {
    Ok(())
}
pub fn child(_w: &str) -> anyhow::Result<()> {
    Ok(())
}
