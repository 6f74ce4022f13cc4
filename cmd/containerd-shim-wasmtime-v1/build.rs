//! Records the git revision for `--version` (see ../revision.rs).

#[path = "../revision.rs"]
mod revision;

fn main() {
    revision::emit();
}
