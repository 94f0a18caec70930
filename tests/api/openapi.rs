//! The OpenAPI document: the checked-in `openapi.json` is what the code generates for the
//! default configuration.

use registrar::settings::Settings;
use std::path::Path;

#[test]
fn the_checked_in_openapi_json_is_the_generated_document() {
    let generated = registrar::openapi::render(&Settings::defaults().unwrap());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        // Regenerate so the fix is one commit away, but still fail: the contract changed.
        let _ = std::fs::write(&path, &generated);
        panic!("openapi.json differed from the generated document; it has been rewritten, review and commit it");
    }
}
