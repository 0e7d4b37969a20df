// Page id (app.js's navigation) -> component.
import { html } from "../lib/h.js";
import { t } from "../lib/i18n.js";
import { Audit } from "./audit.js";
import { CreateVm } from "./create.js";
import { Dashboard } from "./dashboard.js";
import { Host } from "./host.js";
import { Hosts } from "./hosts.js";
import { Networks } from "./networks.js";
import { Storage } from "./storage.js";
import { Tasks } from "./tasks.js";
import { Templates } from "./templates.js";
import { Users } from "./users.js";
import { VmPage } from "./vm.js";
import { VmList } from "./vms.js";

function Vms(props) { return props.parts[1] ? html`<${VmPage} ...${props} />` : html`<${VmList} ...${props} />`; }
function NotFound() { return html`<h1 tabindex="-1">${t("nav.not_found")}</h1><p><a href="#/">${t("nav.dashboard")}</a></p>`; }

export const PAGES = { dashboard: Dashboard, vms: Vms, create: CreateVm, storage: Storage, networks: Networks, host: Host, hosts: Hosts,
  templates: Templates, tasks: Tasks, audit: Audit, users: Users, notfound: NotFound };
