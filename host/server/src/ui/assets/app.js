// The dashboard's one script: a plugin's log page follows new lines as they are written
// (server-sent events) and appends them as text, never as markup.
'use strict';

const table = document.querySelector('table[data-log-stream]');
if (table) {
  const body = table.tBodies[0];
  const status = document.getElementById('live-status');
  const base = table.dataset.logBase;
  const cell = (row, text) => {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  };
  const source = new EventSource(table.dataset.logStream);
  source.onmessage = (event) => {
    const line = JSON.parse(event.data);
    const row = body.insertRow();
    row.className = `level-${line.level}`;
    cell(row, line.at);
    cell(row, line.level);
    cell(row, line.source);
    cell(row, line.message).className = 'message';
    const request = cell(row, '');
    if (line.request_id) {
      const link = document.createElement('a');
      link.href = `${base}?request=${encodeURIComponent(line.request_id)}`;
      link.title = line.request_id;
      link.textContent = line.request_id.slice(0, 8);
      request.append(link);
    }
    // The page keeps the newest thousand lines.
    while (body.rows.length > 1000) body.deleteRow(0);
  };
  source.addEventListener('lagged', (event) => {
    status.textContent = `${event.data} lines were skipped: the log grew faster than this page.`;
  });
  source.onerror = () => {
    status.textContent = 'The live tail is reconnecting…';
  };
  source.onopen = () => {
    status.textContent = 'New lines appear below as they are written.';
  };
}
