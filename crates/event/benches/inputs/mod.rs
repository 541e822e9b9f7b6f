//! The inputs of the parser's bench and of `examples/parse_loop.rs`.

pub fn small() -> String {
    r#"{"type":"order.created","stream":"orders","key":"cust-42","ts":1700000000123,"order_id":"o-981","amount":12.5,"currency":"EUR","items":[{"sku":"a-1","qty":2},{"sku":"b-7","qty":1}]}"#.to_owned()
}

pub fn telemetry() -> String {
    let mut s = String::from(r#"{"type":"telemetry","session":"car7","ts":1700000000123"#);
    for i in 0..24 {
        s.push_str(&format!(
            r#","ch{i}":{{"v":{}.{:03},"min":-{}.5,"max":{}e2,"n":{}}}"#,
            100 + i * 7,
            i * 37 % 1000,
            i,
            i + 1,
            1_000_000 + i * 12_345
        ));
    }
    s.push('}');
    s
}

pub fn nested_kib() -> String {
    let mut s = String::from(
        r#"{"type":"user.updated","tenant":"acme","user":{"id":"u-1","name":"Ada Lovelace","tags":["admin","ops","billing"],"address":{"street":"12 St James's Square","city":"London","zip":"SW1Y 4JH"}},"changes":["#,
    );
    for i in 0..8 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"field":"prefs.f{i}","old":{{"on":false,"level":{i}}},"new":{{"on":true,"level":{},"note":"changed by \"self\" at step {i}\n"}}}}"#,
            i + 1
        ));
    }
    s.push_str("]}");
    s
}

pub fn strings_64k() -> String {
    let mut s = String::from(r#"{"type":"log.batch","lines":["#);
    let mut i = 0;
    while s.len() < 64 * 1024 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#""2026-01-01T00:00:{:02}Z INFO request {i} served in {}ms path=/api/v1/items/{i}""#,
            i % 60,
            i % 97
        ));
        i += 1;
    }
    s.push_str("]}");
    s
}

/// Every input, by name.
pub fn all() -> [(&'static str, String); 4] {
    [
        ("small", small()),
        ("telemetry", telemetry()),
        ("nested_1k", nested_kib()),
        ("strings_64k", strings_64k()),
    ]
}
