//! Links `wasmshim-oci` position-dependent (see ../position_dependent.rs):
//! Docker 20.10 and podman execute it several times per container.

#[path = "../position_dependent.rs"]
mod position_dependent;

fn main() {
    position_dependent::emit();
}
