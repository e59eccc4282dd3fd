// The Lab page's entry module: asks for the health once (which also gives the visitor the
// session cookie their demo steps are pushed to), then opens the live stream and wires every
// section.

import { showHealth, start as startCluster } from './cluster.js';
import { start as startDemos } from './demos.js';
import { start as startOpsDemos } from './ops-demos.js';
import { start as startDecisions } from './adr.js';
import { start as startIdentity } from './identity.js';
import { nameLiveRegions } from './a11y.js';
import { connect } from './live.js';
import { start as startSaga } from './saga.js';

async function main() {
  startCluster();
  startDemos();
  startOpsDemos();
  startSaga();
  startDecisions();
  startIdentity();
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
