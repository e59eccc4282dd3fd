//! The hosted payment page: what the buyer sees at a session's `url` or an order's approve
//! link. One small HTML document, no external assets; its two buttons post to the sandbox's
//! approve and decline calls and show the outcome.

/// What the page shows of a Stripe session or a PayPal order.
pub struct PageView {
    /// `Stripe` or `PayPal`, for the heading.
    pub provider: &'static str,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// ISO currency code.
    pub currency: String,
    /// The merchant's reference (the lab's order id).
    pub reference: String,
    /// The session's or order's status now.
    pub status: &'static str,
    /// Where the buyer goes back to the shop, when the merchant gave one.
    pub return_url: Option<String>,
}

/// The page for session or order `id`.
pub fn render(id: &str, view: &PageView) -> String {
    let amount = format!(
        "{}.{:02} {}",
        view.amount_minor / 100,
        view.amount_minor % 100,
        view.currency
    );
    let open = matches!(view.status, "open" | "CREATED");
    let back = view
        .return_url
        .as_deref()
        .map(|url| format!(r#"<p><a href="{}">Back to the shop</a></p>"#, escape(url)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lab sandbox checkout</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem}}#outcome{{font-weight:bold}}</style></head>
<body data-id="{id}">
<h1>{provider} sandbox</h1>
<p>Pay <strong>{amount}</strong> for order <code>{reference}</code>.</p>
<p>Status: <span id="status">{status}</span></p>
<p><button id="approve"{disabled}>Approve</button><button id="decline"{disabled}>Decline</button></p>
<p id="outcome"></p>{back}
<script>
async function act(what) {{
  const out = document.getElementById('outcome');
  try {{
    const r = await fetch('/sandbox/sessions/' + encodeURIComponent(document.body.dataset.id) + '/' + what, {{method: 'POST'}});
    const b = await r.json();
    out.textContent = r.ok ? 'Payment ' + b.outcome + '.' : (b.detail || b.title || 'Failed.');
    if (r.ok) {{ document.getElementById('status').textContent = b.status; }}
  }} catch (e) {{ out.textContent = 'The sandbox did not answer: ' + e; }}
}}
document.getElementById('approve').onclick = () => act('approve');
document.getElementById('decline').onclick = () => act('decline');
</script>
</body></html>
"#,
        id = escape(id),
        provider = view.provider,
        reference = escape(&view.reference),
        status = view.status,
        disabled = if open { "" } else { " disabled" },
    )
}

/// The page for an id that is neither a session nor an order.
pub fn not_found(id: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head>\
         <body><h1>No such payment</h1><p><code>{}</code> is not a session or an order of this sandbox.</p></body></html>",
        escape(id)
    )
}

/// Text made safe for HTML content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_with_markup_is_shown_as_text() {
        let view = PageView {
            provider: "Stripe",
            amount_minor: 1234,
            currency: "EUR".into(),
            reference: "<script>x</script>".into(),
            status: "open",
            return_url: None,
        };

        let html = render("cs_1", &view);

        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("12.34 EUR"));
    }
}
