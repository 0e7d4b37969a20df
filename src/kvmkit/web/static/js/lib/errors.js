// Known shapes of the API's English error messages, each translated whole by a catalog key with the
// captured parts filled in. Anything else is shown by its code in the user's language with the
// server's own text under it (i18n.describeError). Keys are in both catalogs (tests/web/test_i18n.py).
const Q = "['\u2018\u2019\"]?";

// field names the spec's messages start with (the `what` part) -> catalog keys
export const FIELD_WORDS = {
  "memory": "word.memory", "max memory": "word.max_memory", "disk size": "word.disk_size", "size": "word.size",
  "capacity": "word.capacity", "VM name": "word.vm_name", "name": "word.name", "snapshot name": "word.snapshot_name",
  "volume name": "word.volume_name", "template name": "word.template_name", "vcpus": "word.vcpus",
  "max_vcpus": "word.max_vcpus", "disk pool": "word.pool", "disk volume": "word.volume", "network mac": "word.mac",
  "hostname": "word.hostname", "network name": "word.network_name",
};
export const PATTERNS = [
  [new RegExp(`^(?<what>[A-Za-z_ ]+): ${Q}(?<value>.*?)${Q} is not a size`), "err.not_a_size"],
  [new RegExp(`^(?<what>[A-Za-z_ ]+): ${Q}(?<value>.*?)${Q} must be positive`), "err.size_positive"],
  [new RegExp(`^(?<what>[A-Za-z_ ]+): ${Q}(?<value>.*?)${Q} (MiB )?is far too large`), "err.size_too_large"],
  [/^(?<what>[A-Za-z_ ]+) (?<value>\d+) (?<unit>MiB|bytes) is above the limit of (?<limit>\d+) (MiB|bytes|TiB)/, "err.above_limit"],
  [/^memory (?<mem>\d+) MiB is above max memory (?<max>\d+) MiB/, "err.mem_above_max"],
  [/^vcpus (?<v>\d+) is above max vcpus (?<max>\d+)/, "err.vcpus_above_max"],
  [/^(?<what>vcpus|max_vcpus|sockets|cores|threads) (?<v>-?\d+) is out of range; use 1-(?<max>\d+)/, "err.vcpus_range"],
  [new RegExp(`^invalid (?<what>[A-Za-z_ ]+?) ${Q}(?<value>.*?)${Q}(;|$)`), "err.invalid_name"],
  [/^a VM named '(?<name>.+)' exists already$/, "err.vm_exists"],
  [/^VM '(?<name>.+?)' not found/, "err.vm_not_found"],
  [/^VM '(?<vm>.+?)' has no snapshot '(?<name>.+)'/, "err.snapshot_not_found"],
  [/^network '(?<name>.+)' does not exist/, "err.network_not_found"],
  [/^task '(?<id>.+)' not found/, "err.task_not_found"],
  [/^(?<target>\S+) is busy with task (?<task>\S+) \((?<kind>.+)\)$/, "err.busy"],
  [/^wrong user name or password$/, "err.login_failed"],
  [/^too many failed logins; try again in (?<s>\d+) s$/, "err.login_limited"],
  [/^session expired$/, "err.session_expired"],
  [/^invalid or revoked token$/, "err.session_expired"],
  [/^authentication required$/, "err.auth_required"],
  [/^missing or wrong CSRF token/, "err.csrf"],
  [/^user '(?<user>.+?)' \(role (?<role>\w+)\) may not do this; it needs role (?<need>\w+)/, "err.role_needed"],
  [/^user '(?<user>.+?)' acts only on the VMs delegated to it/, "err.delegated_only"],
  [/^Field required$/, "err.required"],
  [/^Input should be a valid integer/, "err.integer"],
  [/^Input should be greater than or equal to (?<n>-?\d+)/, "err.min_value"],
  [/^Input should be less than or equal to (?<n>-?\d+)/, "err.max_value"],
  [/^String should have at least (?<n>\d+) characters?/, "err.min_length"],
  [/^String should have at most (?<n>\d+) characters?/, "err.max_length"],
  [/^(?<what>.+?) contains control characters or line breaks/, "err.control_chars"],
  [/^hostname '(?<value>.+)' is not a valid DNS label/, "err.hostname"],
  [/^ssh_authorized_keys\[\d+\]: this is a PRIVATE key/, "err.ci_private_key"],
  [/^ssh_authorized_keys\[\d+\]: (this is not an OpenSSH public key line|the key data|the SSH key line is)/, "err.ci_bad_key"],
  [/^the #cloud-config user-data is not a YAML mapping/, "err.ci_not_mapping"],
  [/^the #cloud-config user-data is not valid YAML at line (?<line>\d+)/, "err.ci_yaml_line"],
  [/^the #cloud-config user-data is not valid YAML/, "err.ci_yaml"],
  [/^the user-data's first line is not one cloud-init reads/, "err.ci_first_line"],
  [/^the user-data is (?<size>\d+) bytes; the limit is (?<limit>\d+) bytes/, "err.ci_too_large"],
  [/^the user-data has MIME headers but is not a multipart document|^the multipart user-data has no parts/, "err.ci_multipart"],
  [/^the password must be one line of at most (?<n>\d+) characters/, "err.ci_password"],
  [/^the upload was interrupted$/, "err.upload_interrupted"],
  [/^cancelled$/, "err.cancelled"],
];

export const HINT_PATTERNS = [
  [/^use a number with an optional unit K, M, G or T/, "hint.size"],
  [/^use 1-64 letters, digits, '\.', '_' or '-'/, "hint.name"],
  [/^pick another name or delete that VM$/, "hint.pick_name"],
  [/^wait for it \(GET \/api\/v1\/tasks\/(?<task>\S+)\) or cancel it, then retry$/, "hint.busy"],
  [/^check both; after 5 failures in a minute, wait$/, "hint.login"],
  [/^log in again/, "hint.login_again"],
  [/^fix the named field\(s\)/, "hint.fix_fields"],
  [/^see `kvmkit vm list --all`/, "hint.see_vm_list"],
];
