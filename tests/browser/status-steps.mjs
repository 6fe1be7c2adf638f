// Issue 16 on the status pages in the browser, run by wizard.mjs once the status page is
// reached (logged in): what the status page says about the certificate, the storage
// writes and the charts; the logout confirmed on the login page and the way back in
// without the password; the password change asking for the current password (a wrong
// one refused, nothing changed), then changed and changed back so that the rest of
// wizard.mjs logs in with the password it knows. Ends on the status page, logged in.
// tests/blackbox/tests/wizard.rs asserts on the results (`status_steps` in the JSON).
//
// statusSteps(page, { base, password, shot }) → results; `shot(name)` saves a screenshot.
// Every wait is bounded by the page's default timeouts.

const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
const pathOf = (url) => {
  try { return new URL(url).pathname; } catch { return url; }
};

// Submit the password form with these values; returns the POST's status and where the
// browser ended up.
async function changePassword(page, base, current, password) {
  await page.goto(`${base}/admin/password`, { waitUntil: 'load' });
  await page.fill('input#current', current);
  await page.fill('input#password', password);
  await page.fill('input#confirm', password);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === '/admin/password' && r.request().method() === 'POST'),
    page.click('form[action="/admin/password"] button[type=submit]'),
  ]);
  await page.waitForLoadState('load');
  return { status: resp.status(), lands_on: pathOf(page.url()) };
}

export async function statusSteps(page, { base, password, shot }) {
  const r = {};
  const text = async (sel) => norm(await page.textContent(sel).catch(() => null)) || null;

  // The status page as it is right after setup.
  await page.goto(`${base}/admin/status`, { waitUntil: 'load' });
  r.cert_label = await text('#cert-issuer');
  r.written_label = await text('#written-label');
  r.charts_note = await text('#charts-note');
  r.charts_text = await text('#charts');
  r.charts = await page.$$eval('#charts figure', (figs) => figs.map((f) => ({
    title: (f.querySelector('figcaption') || {}).textContent || '',
    svg: !!f.querySelector('svg'),
    labels: Array.from(f.querySelectorAll('svg text')).map((t) => t.textContent),
    empty: (f.querySelector('.chart-empty') || {}).textContent || null,
  })));

  // Logging out is confirmed; the login page says how to get back in without the password.
  await Promise.all([
    page.waitForURL((u) => pathOf(u.toString()) === '/admin/login'),
    page.click('button#logout'),
  ]);
  r.logout_url = page.url();
  r.logged_out = await text('#logged-out');
  r.forgotten = await text('#forgotten');
  await shot('logged-out');
  await page.fill('input#password', password);
  await Promise.all([
    page.waitForURL((u) => pathOf(u.toString()) === '/admin/status'),
    page.click('form[action="/admin/login"] button[type=submit]'),
  ]);

  // Changing the password asks for the current one: a wrong one is refused at the field.
  await page.goto(`${base}/admin/password`, { waitUntil: 'load' });
  r.password_has_current = (await page.locator('input#current').count()) > 0;
  const changed = `${password} (changed)`;
  const wrong = await changePassword(page, base, `${password}x`, changed);
  r.wrong_current_status = wrong.status;
  r.wrong_current_error = await text('#current-error');
  await shot('password-wrong-current');
  // The right one changes it; then back, so that the caller's password works again.
  r.change = await changePassword(page, base, password, changed);
  r.change_back = await changePassword(page, base, changed, password);

  await page.goto(`${base}/admin/status`, { waitUntil: 'load' });
  r.ends_on = pathOf(page.url());
  return r;
}
