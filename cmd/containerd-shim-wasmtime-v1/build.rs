//! Records the git revision for `--version` (see ../revision.rs) and links
//! the shim position-dependent (see ../position_dependent.rs).

#[path = "../position_dependent.rs"]
mod position_dependent;
#[path = "../revision.rs"]
mod revision;

fn main() {
    revision::emit();
    position_dependent::emit();
}
