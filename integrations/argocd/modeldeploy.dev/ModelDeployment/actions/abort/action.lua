-- Roll the running canary back now, or stop a running experiment (control keeps serving).
-- A request is an annotation whose every new value the operator acts on once. Argo CD
-- self-heal leaves it in place because the manifest in Git does not set it.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.dev/abort"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
