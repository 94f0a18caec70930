//! What `registrar audit verify` and `registrar audit list` print (the commands only open the
//! store the configuration names and call these).

use super::{list, verify_log, AuditLog, AuditQuery};

/// `audit verify`: `Ok("N records, chain intact, head <hash>")`, or `Err` naming the first bad
/// `seq` (exit 1), or `Err` when the store cannot be read.
pub async fn verify(log: &dyn AuditLog) -> Result<String, String> {
    match verify_log(log).await {
        Ok(Ok(verified)) => Ok(verified.to_string()),
        Ok(Err(bad)) => Err(format!(
            "audit chain broken at seq {}: {}",
            bad.seq, bad.reason
        )),
        Err(e) => Err(format!("cannot read the audit trail: {e}")),
    }
}

/// `audit list`: one page, as JSON lines (`json`) or a table, plus the cursor of the next page
/// (`--after`), if any.
pub async fn list_page(
    log: &dyn AuditLog,
    query: &AuditQuery,
    json: bool,
) -> Result<(String, Option<u64>), String> {
    let page = list(log, query)
        .await
        .map_err(|e| format!("cannot read the audit trail: {e}"))?;
    let mut out = String::new();
    if !json {
        out.push_str("SEQ\tTIME\tEVENT\tCLIENT_ID\tACTOR\tSOURCE_IP\tCHANGED\n");
    }
    for r in &page.records {
        if json {
            out.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        } else {
            // The kind as the records spell it (`registration_access_token`), not Rust's Debug.
            let kind = serde_json::to_value(r.actor.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let actor = match (&r.actor.name, &r.actor.iss, &r.actor.token_digest) {
                (Some(name), _, _) => format!("{kind}:{name}"),
                (_, Some(iss), _) => format!("{kind}:{iss}"),
                (_, _, Some(digest)) => format!("{kind}:{digest}"),
                _ => kind,
            };
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.seq,
                super::webhook::rfc3339(r.time),
                r.event,
                r.client_id.as_deref().unwrap_or("-"),
                actor,
                r.source_ip.as_deref().unwrap_or("-"),
                r.changed.join(","),
            ));
        }
        out.push('\n');
    }
    Ok((out, page.next_cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::audit::EventType;
    use crate::store::event_log::contract::entry;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn verify_prints_the_head_or_the_first_bad_seq() {
        let store = MemoryStore::new();
        assert_eq!(
            verify(&store).await.unwrap(),
            format!(
                "0 records, chain intact, head {}",
                crate::events::audit::GENESIS_HASH
            )
        );
        store.append_for_tests((0..3).map(|i| entry(i, "a", EventType::Updated)));
        let ok = verify(&store).await.unwrap();
        assert!(ok.starts_with("3 records, chain intact, head "), "{ok}");
        store.tamper_for_tests(|t| {
            t.get_mut(&2).unwrap().time = 99;
        });
        let e = verify(&store).await.unwrap_err();
        assert!(e.starts_with("audit chain broken at seq 2: "), "{e}");
    }

    #[tokio::test]
    async fn list_prints_a_table_or_json_lines_with_a_cursor() {
        let store = MemoryStore::new();
        store.append_for_tests((0..3).map(|i| entry(i, "a", EventType::Updated)));
        let q = AuditQuery {
            limit: 2,
            ..Default::default()
        };
        let (table, next) = list_page(&store, &q, false).await.unwrap();
        assert_eq!(next, Some(2));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SEQ\tTIME\tEVENT"));
        assert!(
            lines[1].starts_with(
                "1\t1970-01-01T00:00:00Z\tclient.updated\ta\tanonymous\t192.0.2.1\tclient_name"
            ),
            "{}",
            lines[1]
        );
        let (json, _) = list_page(&store, &q, true).await.unwrap();
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(first["event"], "client.updated");
    }
}
