//! Runs the YAML transform tests in `tests/transforms.yaml` through the same runner as
//! `trib pipeline test`.

use trib_pipelines::config::load;
use trib_pipelines::unit_test::run_tests;
use trib_pipelines::validate::validate;

#[test]
fn transform_yaml_tests_pass() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transforms.yaml");
    let loaded = load(&path).unwrap_or_else(|e| panic!("{e}"));
    validate(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let reports = run_tests(&loaded);
    assert_eq!(reports.len(), 10);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
