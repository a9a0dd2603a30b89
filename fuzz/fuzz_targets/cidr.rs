//! `Cidr` parsing: never panics; what parses prints back to itself and
//! contains its own network address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_freqlimit::key::Cidr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<Cidr>() {
        Ok(cidr) => {
            let shown = cidr.to_string();
            assert_eq!(
                shown.parse::<Cidr>().as_ref(),
                Ok(&cidr),
                "{text:?} -> {shown}"
            );
            assert!(
                cidr.contains(cidr.addr()),
                "{cidr} does not contain its address"
            );
        }
        Err(err) => {
            // The message quotes (at most 64 bytes of) the input.
            assert!(err.to_string().starts_with("invalid CIDR "), "{err}");
        }
    }
});
