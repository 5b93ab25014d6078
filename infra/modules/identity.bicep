// User-assigned managed identity shared by every function in the app.
//
// Why user-assigned rather than system-assigned: the identity (and therefore every role assignment)
// exists before the function app is created, so the host's first start already has its data-plane
// roles, and `func azure functionapp publish` can write to the identity-authenticated deployment
// container straight away. The identity and its grants also survive re-creating the app, and
// subscription.bicep can be deployed with a principal id that never changes. The price is a few
// extra app settings naming the client id (see functionapp.bicep).

@description('Azure region.')
param location string

@description('Name of the identity.')
param name string

@description('Tags for the resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
