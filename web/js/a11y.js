// Accessible names for the pages' live regions that the markup leaves unnamed: a "Drive it"
// panel's verdict area is announced as "<panel title>: result" rather than as an anonymous
// region, whichever panel it is (panels are added often; naming them here keeps every one named).

/** The heading a region belongs to: its panel's `h4`, else its section's `h2`. */
function headingOf(node) {
  const panel = node.closest('.drive');
  const heading = panel?.querySelector('h4') || node.closest('section, article')?.querySelector('h2, h3');
  return heading ? heading.textContent.replace(/\s+/g, ' ').trim() : null;
}

/** Names every `aria-live` region without an `aria-label` or `aria-labelledby`. */
export function nameLiveRegions(root = document) {
  for (const node of root.querySelectorAll('[aria-live]')) {
    if (node.hasAttribute('aria-label') || node.hasAttribute('aria-labelledby')) continue;
    const heading = headingOf(node);
    if (heading) node.setAttribute('aria-label', `${heading}: result`);
  }
}
