// The /chaos page's entry module: draws the health once (which also gives the visitor their
// session cookie), wires the topology, the fault controls and the read-outs, then opens the
// live stream.

import { showFaults, showHealth, start as startTopology } from './chaos-topology.js';
import { onFaults, start as startFaults } from './chaos-faults.js';
import { start as startPanels } from './chaos-panels.js';
import { nameLiveRegions } from './a11y.js';
import { connect } from './live.js';

async function main() {
  startTopology();
  onFaults(showFaults);
  startFaults();
  startPanels();
  nameLiveRegions();
  try {
    const response = await fetch('/api/health', { credentials: 'same-origin' });
    if (response.ok) showHealth(await response.json());
  } catch (error) {
    console.warn('health is not answering yet', error);
  }
  connect();
}

main();
