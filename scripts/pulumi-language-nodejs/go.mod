// The project's own Node.js language host for the Pulumi engine (see main.go for why).
// scripts/pulumi.sh pins the sdk to the @pulumi/pulumi version in node_modules and tidies a copy
// in the build cache; nothing here is built inside the work tree.
module imageyard.dev/pulumi-language-nodejs

go 1.25

require github.com/pulumi/pulumi/sdk/v3 v3.276.0
